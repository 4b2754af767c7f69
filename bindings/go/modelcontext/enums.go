package modelcontext

/*
#include <stdlib.h>
#include <model_context.h>
*/
import "C"

import "unsafe"

// WeightLocation is a weight of the model (the seed's WeightLocationType).
type WeightLocation int32

// The weight locations, with the C library's values.
const (
	WeightMLPToHidden          WeightLocation = C.MC_WEIGHT_MLP_TO_HIDDEN
	WeightMLPToResidual        WeightLocation = C.MC_WEIGHT_MLP_TO_RESIDUAL
	WeightEmbedding            WeightLocation = C.MC_WEIGHT_EMBEDDING
	WeightUnembedding          WeightLocation = C.MC_WEIGHT_UNEMBEDDING
	WeightPositionEmbedding    WeightLocation = C.MC_WEIGHT_POSITION_EMBEDDING
	WeightAttnToQuery          WeightLocation = C.MC_WEIGHT_ATTN_TO_QUERY
	WeightAttnToKey            WeightLocation = C.MC_WEIGHT_ATTN_TO_KEY
	WeightAttnToValue          WeightLocation = C.MC_WEIGHT_ATTN_TO_VALUE
	WeightAttnToResidual       WeightLocation = C.MC_WEIGHT_ATTN_TO_RESIDUAL
	WeightLayerNormGainFinal   WeightLocation = C.MC_WEIGHT_LAYER_NORM_GAIN_FINAL
	WeightLayerNormBiasFinal   WeightLocation = C.MC_WEIGHT_LAYER_NORM_BIAS_FINAL
	WeightLayerNormGainPreAttn WeightLocation = C.MC_WEIGHT_LAYER_NORM_GAIN_PRE_ATTN
	WeightLayerNormGainPreMLP  WeightLocation = C.MC_WEIGHT_LAYER_NORM_GAIN_PRE_MLP
	WeightAttnQueryBias        WeightLocation = C.MC_WEIGHT_ATTN_QUERY_BIAS
	WeightAttnKeyBias          WeightLocation = C.MC_WEIGHT_ATTN_KEY_BIAS
	WeightAttnValueBias        WeightLocation = C.MC_WEIGHT_ATTN_VALUE_BIAS
	WeightAttnResidualBias     WeightLocation = C.MC_WEIGHT_ATTN_RESIDUAL_BIAS
	WeightMLPHiddenBias        WeightLocation = C.MC_WEIGHT_MLP_HIDDEN_BIAS
	WeightMLPResidualBias      WeightLocation = C.MC_WEIGHT_MLP_RESIDUAL_BIAS
	WeightLayerNormBiasPreAttn WeightLocation = C.MC_WEIGHT_LAYER_NORM_BIAS_PRE_ATTN
	WeightLayerNormBiasPreMLP  WeightLocation = C.MC_WEIGHT_LAYER_NORM_BIAS_PRE_MLP
	WeightCount                WeightLocation = C.MC_WEIGHT_COUNT // number of locations
)

// Dimension is a model dimension (the seed's Dimension).
type Dimension int32

// The dimensions, with the C library's values.
const (
	DimMaxContextLength         Dimension = C.MC_DIM_MAX_CONTEXT_LENGTH
	DimResidualStreamChannels   Dimension = C.MC_DIM_RESIDUAL_STREAM_CHANNELS
	DimVocabSize                Dimension = C.MC_DIM_VOCAB_SIZE
	DimAttnHeads                Dimension = C.MC_DIM_ATTN_HEADS
	DimQueryAndKeyChannels      Dimension = C.MC_DIM_QUERY_AND_KEY_CHANNELS
	DimValueChannels            Dimension = C.MC_DIM_VALUE_CHANNELS
	DimMLPActs                  Dimension = C.MC_DIM_MLP_ACTS
	DimLayers                   Dimension = C.MC_DIM_LAYERS
	DimSingleton                Dimension = C.MC_DIM_SINGLETON
	DimSequenceTokens           Dimension = C.MC_DIM_SEQUENCE_TOKENS
	DimAttendedToSequenceTokens Dimension = C.MC_DIM_ATTENDED_TO_SEQUENCE_TOKENS
	DimAutoencoderLatents       Dimension = C.MC_DIM_AUTOENCODER_LATENTS
	DimCount                    Dimension = C.MC_DIM_COUNT // number of dimensions
	DimNone                     Dimension = C.MC_DIM_NONE  // no normalisation
)

// Activation is an activation location of the forward pass.
type Activation int32

// The activation locations, with the C library's values.
const (
	ActResidPostEmb    Activation = C.MC_ACT_RESID_POST_EMB
	ActResidDeltaAttn  Activation = C.MC_ACT_RESID_DELTA_ATTN
	ActResidPostAttn   Activation = C.MC_ACT_RESID_POST_ATTN
	ActResidDeltaMLP   Activation = C.MC_ACT_RESID_DELTA_MLP
	ActResidPostMLP    Activation = C.MC_ACT_RESID_POST_MLP
	ActAttnLnScale     Activation = C.MC_ACT_ATTN_LN_SCALE
	ActMLPLnScale      Activation = C.MC_ACT_MLP_LN_SCALE
	ActResidLnFScale   Activation = C.MC_ACT_RESID_LN_F_SCALE
	ActResidPostAttnLn Activation = C.MC_ACT_RESID_POST_ATTN_LN
	ActResidPostMLPLn  Activation = C.MC_ACT_RESID_POST_MLP_LN
	ActResidPostLnF    Activation = C.MC_ACT_RESID_POST_LN_F
	ActAttnQ           Activation = C.MC_ACT_ATTN_Q
	ActAttnK           Activation = C.MC_ACT_ATTN_K
	ActAttnV           Activation = C.MC_ACT_ATTN_V
	ActAttnQKLogits    Activation = C.MC_ACT_ATTN_QK_LOGITS
	ActAttnQKProbs     Activation = C.MC_ACT_ATTN_QK_PROBS
	ActAttnVOut        Activation = C.MC_ACT_ATTN_V_OUT
	ActMLPPreAct       Activation = C.MC_ACT_MLP_PRE_ACT
	ActMLPPostAct      Activation = C.MC_ACT_MLP_POST_ACT
	ActLogits          Activation = C.MC_ACT_LOGITS
	ActCount           Activation = C.MC_ACT_COUNT // number of locations
)

// Layer sentinels.
const (
	LayerNone = C.MC_LAYER_NONE // a model-wide location
	LayerAll  = C.MC_LAYER_ALL  // every layer (forward requests)
)

// ModelDType is the dtype the model is created in, or a weight is converted to.
type ModelDType int32

// The model dtypes.
const (
	ModelFloat32  ModelDType = C.MC_DTYPE_FLOAT32
	ModelFloat16  ModelDType = C.MC_DTYPE_FLOAT16
	ModelBFloat16 ModelDType = C.MC_DTYPE_BFLOAT16
)

func goName(p *C.char) string {
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

func lookup(op, name string, f func(*C.char, *C.int32_t) C.mc_status) (int32, error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var out C.int32_t
	err := call(op, func() C.mc_status { return f(cn, &out) })
	return int32(out), err
}

// String is the seed's name (e.g. "attn.to_query"), or "" when out of range.
func (l WeightLocation) String() string {
	return goName(C.mc_weight_location_name(C.mc_weight_location(l)))
}

// PerLayer reports whether the location takes a layer index (else LayerNone).
func (l WeightLocation) PerLayer() (bool, error) {
	var b C.bool
	err := call("mc_weight_location_per_layer", func() C.mc_status {
		return C.mc_weight_location_per_layer(C.mc_weight_location(l), &b)
	})
	return bool(b), err
}

// WeightLocationFromName looks a location up by the seed's name.
func WeightLocationFromName(name string) (WeightLocation, error) {
	v, err := lookup("mc_weight_location_from_name", name, func(n *C.char, o *C.int32_t) C.mc_status {
		return C.mc_weight_location_from_name(n, o)
	})
	return WeightLocation(v), err
}

// String is the seed's name (e.g. "residual_stream_channels"), or "" when out of range.
func (d Dimension) String() string { return goName(C.mc_dimension_name(C.mc_dimension(d))) }

// DimensionFromName looks a dimension up by the seed's name.
func DimensionFromName(name string) (Dimension, error) {
	v, err := lookup("mc_dimension_from_name", name, func(n *C.char, o *C.int32_t) C.mc_status {
		return C.mc_dimension_from_name(n, o)
	})
	return Dimension(v), err
}

// String is the location's name (e.g. "mlp.post_act"), or "" when out of range.
func (a Activation) String() string { return goName(C.mc_activation_name(C.mc_activation(a))) }

// PerLayer reports whether the activation is per layer (else model-wide).
func (a Activation) PerLayer() (bool, error) {
	var b C.bool
	err := call("mc_activation_per_layer", func() C.mc_status {
		return C.mc_activation_per_layer(C.mc_activation(a), &b)
	})
	return bool(b), err
}

// ActivationFromName looks an activation location up by name.
func ActivationFromName(name string) (Activation, error) {
	v, err := lookup("mc_activation_from_name", name, func(n *C.char, o *C.int32_t) C.mc_status {
		return C.mc_activation_from_name(n, o)
	})
	return Activation(v), err
}
