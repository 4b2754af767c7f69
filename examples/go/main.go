// The C tour (examples/c/tour.c) in Go, printing the same lines: open a checkpoint, read its
// config and dimensions, fetch weights, encode and decode text, run a forward pass keeping
// two activations, check the logits against them, and show errors as Go error values.
//
//	PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig go run . MODEL_DIR
package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	mc "model_context/bindings/go/modelcontext"
)

// sum adds the elements in row-major order, in float64, following the strides.
func sum(t *mc.Tensor) float64 {
	v, err := t.Float32s()
	if err != nil {
		panic(err)
	}
	shape, strides := t.Shape(), t.Strides()
	s := 0.0
	for flat := int64(0); flat < t.NumElements(); flat++ {
		rest, off := flat, int64(0)
		for i := len(shape) - 1; i >= 0; i-- {
			off += (rest % shape[i]) * strides[i]
			rest /= shape[i]
		}
		s += float64(v[off])
	}
	return s
}

func dims(v []int64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprint(x)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// quoted shows bytes that may not be UTF-8: printable ASCII as is, the rest as \xNN.
func quoted(b []byte) string {
	var s strings.Builder
	s.WriteByte('"')
	for _, c := range b {
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			s.WriteByte(c)
		} else {
			fmt.Fprintf(&s, "\\x%02x", c)
		}
	}
	s.WriteByte('"')
	return s.String()
}

func describe(kind, name string, layer int, t *mc.Tensor) {
	l := "-"
	if layer != mc.LayerNone {
		l = fmt.Sprint(layer)
	}
	if t.DType() != mc.Float32 || t.Device().Type != mc.CPU {
		panic("this tour reads float32 tensors on the CPU only")
	}
	fmt.Printf("%s %s layer=%s shape=%s strides=%s dtype=float32 sum=%.6f\n",
		kind, name, l, dims(t.Shape()), dims(t.Strides()), sum(t))
}

func must[T any](v T, err error) T {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return v
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, "usage: %s MODEL_DIR\n", os.Args[0])
		os.Exit(2)
	}
	ctx := must(mc.Open(os.Args[1], "cpu"))
	defer ctx.Close()
	fmt.Printf("model_context %s\n", mc.Version())
	fmt.Printf("config %s\n", must(ctx.ConfigJSON()))
	vocab := must(ctx.DimSize(mc.DimVocabSize))
	dModel := must(ctx.DimSize(mc.DimResidualStreamChannels))
	fmt.Printf("dims layers=%d d_model=%d heads=%d vocab=%d\n",
		must(ctx.DimSize(mc.DimLayers)), dModel, must(ctx.DimSize(mc.DimAttnHeads)), vocab)

	for _, w := range []struct {
		loc   mc.WeightLocation
		layer int
	}{{mc.WeightAttnToQuery, 0}, {mc.WeightEmbedding, mc.LayerNone}} {
		t := must(ctx.Weight(w.loc, w.layer))
		describe("weight", w.loc.String(), w.layer, t)
		t.Close() // or leave it to the finalizer
	}

	prompt := "Hello, world"
	ids := must(ctx.Encode(prompt))
	list := make([]int64, len(ids))
	for i, id := range ids {
		list[i] = int64(id)
	}
	fmt.Printf("tokens %s -> %s\n", quoted([]byte(prompt)), dims(list))
	fmt.Printf("decode -> %s\n", quoted(must(ctx.Decode(ids))))

	out := must(ctx.Forward(mc.ForwardRequest{
		Tokens: ids, Batch: 1, SeqLen: len(ids),
		Activations: []mc.ActivationRequest{{Activation: mc.ActMLPPostAct, Layer: 1}, {Activation: mc.ActResidPostLnF, Layer: mc.LayerNone}},
	}))
	logits := must(out.Logits())
	mlp := must(out.Get(mc.ActMLPPostAct, 1))
	resid := must(out.Get(mc.ActResidPostLnF, mc.LayerNone))
	out.Close() // the tensors taken from it stay valid
	defer logits.Close()
	defer mlp.Close()
	defer resid.Close()
	describe("forward", "logits", mc.LayerNone, logits)
	describe("activation", mc.ActMLPPostAct.String(), 1, mlp)
	describe("activation", mc.ActResidPostLnF.String(), mc.LayerNone, resid)

	// The last position's logits are resid.post_ln_f @ unembedding ([d_model, vocab]).
	unemb := must(ctx.Weight(mc.WeightUnembedding, mc.LayerNone))
	defer unemb.Close()
	lv, hv, wv := must(logits.Float32s()), must(resid.Float32s()), must(unemb.Float32s())
	last, best, maxDiff := int64(len(ids)-1), int64(0), 0.0
	for v := int64(0); v < vocab; v++ {
		dot := 0.0
		for d := int64(0); d < dModel; d++ {
			dot += float64(hv[resid.Offset(0, last, d)]) * float64(wv[unemb.Offset(d, v)])
		}
		l := float64(lv[logits.Offset(0, last, v)])
		maxDiff = math.Max(maxDiff, math.Abs(l-dot))
		if l > float64(lv[logits.Offset(0, last, best)]) {
			best = v
		}
	}
	verdict := "FAILED"
	if maxDiff < 1e-4 {
		verdict = "ok"
	}
	fmt.Printf("check logits == resid.post_ln_f @ unembedding: %s\n", verdict)
	fmt.Printf("next token %d %s\n", best, quoted(must(ctx.DecodeToken(uint32(best)))))

	// Errors are *mc.Error values: errors.Is tests the status class, the message names the cause.
	var e *mc.Error
	if _, err := ctx.Weight(mc.WeightAttnToQuery, 99); errors.As(err, &e) && errors.Is(err, mc.ErrInvalidArgument) {
		fmt.Printf("error mc_get_weight(attn.to_query, layer 99): %s: %s\n", e.Status, e.Message)
	}
	if _, err := mc.Open("/no/such/model", "cpu"); errors.As(err, &e) && errors.Is(err, mc.ErrNotFound) {
		fmt.Printf("error mc_open(/no/such/model): %s: %s\n", e.Status, e.Message)
	}
	if maxDiff >= 1e-4 {
		os.Exit(1)
	}
}
