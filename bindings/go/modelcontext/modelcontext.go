// Package modelcontext is the Go binding of model_context: GPT-2-family transformer
// checkpoints in the transformer-debugger layout, their weights, tokens and forward-pass
// activations as DLPack tensors.
//
// It links the installed C library through pkg-config (`make install PREFIX=...`, then
// PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig) and has no other dependency.
//
// Ownership: every object (*Context, *Tensor, *ForwardOutput, *State) is released by
// Close() error; each also has a finalizer doing the same, so forgetting one leaks nothing
// for long, and Close may be called more than once (only the first call frees). Tensors stay
// valid after the Context or ForwardOutput that produced them is closed.
//
// Tensor data: With(t, func(view []T) error) lends the tensor's memory (no copy) for the
// callback's duration, and Close and the finalizer wait for it; Copy (and Tensor.Float32s)
// returns the elements in Go memory. No slice into library memory outlives the callback.
//
// Threads: a Context and a ForwardOutput may be used from any number of goroutines at once;
// Close waits for the calls in flight. The C library's per-thread error message is read on
// the OS thread that made the failing call, so errors never mix between goroutines.
//
// cgo rules: no Go pointer is ever stored in C memory. Arrays that C reads through a struct
// (the forward request) are copied into C memory for the call; plain buffers are passed as Go
// pointers that C uses only during the call.
package modelcontext

/*
#cgo pkg-config: model_context
#include <stdlib.h>
#include <model_context.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// Status is the class of a failure, one of the Err* constants (the C library's mc_status).
// It is an error itself, so errors.Is(err, modelcontext.ErrNotFound) tests the class of any
// error this package returns.
type Status int32

// The statuses, in the C library's order.
const (
	OK                 Status = C.MC_OK
	ErrNullArgument    Status = C.MC_ERR_NULL_ARGUMENT
	ErrInvalidArgument Status = C.MC_ERR_INVALID_ARGUMENT
	ErrNotFound        Status = C.MC_ERR_NOT_FOUND
	ErrIO              Status = C.MC_ERR_IO
	ErrFormat          Status = C.MC_ERR_FORMAT
	ErrForbidden       Status = C.MC_ERR_FORBIDDEN
	ErrShape           Status = C.MC_ERR_SHAPE
	ErrDevice          Status = C.MC_ERR_DEVICE
	ErrToken           Status = C.MC_ERR_TOKEN
	ErrUnsupported     Status = C.MC_ERR_UNSUPPORTED
	ErrBufferTooSmall  Status = C.MC_ERR_BUFFER_TOO_SMALL
	ErrNetwork         Status = C.MC_ERR_NETWORK
	ErrPanic           Status = C.MC_ERR_PANIC
	ErrInternal        Status = C.MC_ERR_INTERNAL
	ErrOutOfMemory     Status = C.MC_ERR_OUT_OF_MEMORY
)

// Error returns the status's constant name, e.g. "MC_ERR_NOT_FOUND".
func (s Status) Error() string { return C.GoString(C.mc_status_name(C.mc_status(s))) }

// Error is a failed call: the C function, the status and the library's message, which names
// the cause (path, key, layer, expected and actual shapes).
type Error struct {
	Op      string
	Status  Status
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s: %s", e.Op, e.Status, e.Message) }

// Unwrap returns the Status, for errors.Is.
func (e *Error) Unwrap() error { return e.Status }

// ErrClosed is returned by calls on a Context or ForwardOutput after Close.
var ErrClosed = errors.New("modelcontext: use after Close")

// call runs one C call and, on failure, reads the message on the same OS thread: the C
// library keeps the last error per thread, and a goroutine may otherwise move in between.
func call(op string, f func() C.mc_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if s := Status(f()); s != OK {
		return &Error{Op: op, Status: s, Message: C.GoString(C.mc_last_error())}
	}
	return nil
}

// Version is the C library's version, "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.mc_version()) }

// cString returns a C copy of s (nil for ""), and the function freeing it.
func cString(s string) (*C.char, func()) {
	if s == "" {
		return nil, func() {}
	}
	p := C.CString(s)
	return p, func() { C.free(unsafe.Pointer(p)) }
}

// Context is an open checkpoint (mc_context). Safe for concurrent use.
type Context struct {
	mu  sync.RWMutex
	ptr *C.mc_context
}

// Open opens a checkpoint folder in the transformer-debugger layout (or "tiktoken:<encoding>"
// for a tokenizer-only context), reading only its config.json. device is "cpu", "cuda",
// "cuda:N", "mps", or "" for the default (CUDA device 0 if available, else MPS, else CPU).
func Open(model, device string) (*Context, error) {
	cm := C.CString(model)
	defer C.free(unsafe.Pointer(cm))
	cd, free := cString(device)
	defer free()
	var p *C.mc_context
	if err := call("mc_open", func() C.mc_status { return C.mc_open(cm, cd, &p) }); err != nil {
		return nil, err
	}
	c := &Context{ptr: p}
	runtime.SetFinalizer(c, (*Context).Close)
	return c, nil
}

// OpenOptions are mc_open_options in Go: the device ("" for the default), weight
// processing (all off by default, so weights are as stored), the cache folder and base URL
// of remote checkpoints ("" for the defaults) and offline use. Download progress reports
// are not exposed to Go.
type OpenOptions struct {
	Device               string
	FoldLN               bool
	CenterWritingWeights bool
	CenterUnembed        bool
	FoldValueBiases      bool
	CacheDir             string
	BaseURL              string
	Offline              bool
}

// OpenWithOptions is Open with every option of mc_open_ex.
func OpenWithOptions(model string, opts OpenOptions) (*Context, error) {
	cm := C.CString(model)
	defer C.free(unsafe.Pointer(cm))
	var o C.mc_open_options
	if err := call("mc_open_options_init", func() C.mc_status {
		return C.mc_open_options_init(&o, C.size_t(unsafe.Sizeof(o)))
	}); err != nil {
		return nil, err
	}
	cd, freeDevice := cString(opts.Device)
	defer freeDevice()
	cc, freeCache := cString(opts.CacheDir)
	defer freeCache()
	cb, freeBase := cString(opts.BaseURL)
	defer freeBase()
	o.device, o.cache_dir, o.base_url = cd, cc, cb
	o.fold_ln = C.bool(opts.FoldLN)
	o.center_writing_weights = C.bool(opts.CenterWritingWeights)
	o.center_unembed = C.bool(opts.CenterUnembed)
	o.fold_value_biases = C.bool(opts.FoldValueBiases)
	o.offline = C.bool(opts.Offline)
	var p *C.mc_context
	if err := call("mc_open_ex", func() C.mc_status { return C.mc_open_ex(cm, &o, &p) }); err != nil {
		return nil, err
	}
	c := &Context{ptr: p}
	runtime.SetFinalizer(c, (*Context).Close)
	return c, nil
}

// Close frees the context (mc_free) once no call is in flight; later calls return ErrClosed.
// Tensors it handed out stay valid. Closing twice is a no-op.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		C.mc_free(c.ptr)
		c.ptr = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// use runs f with the live context, holding it open for the call's duration.
func (c *Context) use(f func(p *C.mc_context) error) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.ptr == nil {
		return ErrClosed
	}
	return f(c.ptr)
}

// ConfigJSON is the checkpoint's config.json as a JSON object (mc_config_json).
func (c *Context) ConfigJSON() (string, error) {
	var s string
	err := c.use(func(p *C.mc_context) error {
		var out *C.char
		if err := call("mc_config_json", func() C.mc_status { return C.mc_config_json(p, &out) }); err != nil {
			return err
		}
		s = C.GoString(out)
		C.mc_string_free(out)
		return nil
	})
	return s, err
}

// DimSize is the size of a model dimension (mc_dim_size).
func (c *Context) DimSize(d Dimension) (int64, error) {
	var n C.int64_t
	err := c.use(func(p *C.mc_context) error {
		return call("mc_dim_size", func() C.mc_status { return C.mc_dim_size(p, C.mc_dimension(d), &n) })
	})
	return int64(n), err
}

// WeightOptions are the optional arguments of WeightWith.
type WeightOptions struct {
	// Normalize L2-normalises along NormalizeDim, a dimension appearing once in the shape.
	Normalize    bool
	NormalizeDim Dimension
	// Device is "" for the context's device, else a device string as for Open.
	Device string
	// Convert returns the weight in DType (a new tensor) instead of the stored dtype.
	Convert bool
	DType   ModelDType
}

// Weight is the weight at loc in its standard shape; layer is a layer index for per-layer
// locations and LayerNone for model-wide ones (mc_get_weight).
func (c *Context) Weight(loc WeightLocation, layer int) (*Tensor, error) {
	return c.tensor("mc_get_weight", func(p *C.mc_context, out **C.DLManagedTensorVersioned) C.mc_status {
		return C.mc_get_weight(p, C.mc_weight_location(loc), C.int32_t(layer), C.MC_DIM_NONE, nil, out)
	})
}

// WeightWith is Weight with normalisation, another device or dtype conversion; layer may
// also be LayerAll, stacking a per-layer location as [n_layers, ...] (mc_get_weight_ex).
func (c *Context) WeightWith(loc WeightLocation, layer int, o WeightOptions) (*Tensor, error) {
	cd, free := cString(o.Device)
	defer free()
	var req C.mc_weight_request
	if err := call("mc_weight_request_init", func() C.mc_status {
		return C.mc_weight_request_init(&req, C.size_t(unsafe.Sizeof(req)))
	}); err != nil {
		return nil, err
	}
	req.location = C.mc_weight_location(loc)
	req.layer = C.int32_t(layer)
	if o.Normalize {
		req.normalize_dim = C.mc_dimension(o.NormalizeDim)
	}
	req.device = cd
	if o.Convert {
		req.dtype = C.mc_dtype(o.DType)
	}
	return c.tensor("mc_get_weight_ex", func(p *C.mc_context, out **C.DLManagedTensorVersioned) C.mc_status {
		return C.mc_get_weight_ex(p, &req, out)
	})
}

// Embedding is the token embedding [vocab_size, d_model] (mc_get_embedding).
func (c *Context) Embedding(device string) (*Tensor, error) {
	cd, free := cString(device)
	defer free()
	return c.tensor("mc_get_embedding", func(p *C.mc_context, out **C.DLManagedTensorVersioned) C.mc_status {
		return C.mc_get_embedding(p, cd, out)
	})
}

// UnembeddingWithLnGain is the unembedding [d_model, vocab_size] scaled by the final layer
// norm's gain (mc_get_unembedding_with_ln_gain).
func (c *Context) UnembeddingWithLnGain(device string) (*Tensor, error) {
	cd, free := cString(device)
	defer free()
	return c.tensor("mc_get_unembedding_with_ln_gain", func(p *C.mc_context, out **C.DLManagedTensorVersioned) C.mc_status {
		return C.mc_get_unembedding_with_ln_gain(p, cd, out)
	})
}

func (c *Context) tensor(op string, f func(*C.mc_context, **C.DLManagedTensorVersioned) C.mc_status) (*Tensor, error) {
	var t *Tensor
	err := c.use(func(p *C.mc_context) error {
		var m *C.DLManagedTensorVersioned
		if err := call(op, func() C.mc_status { return f(p, &m) }); err != nil {
			return err
		}
		t = newTensor(m)
		return nil
	})
	return t, err
}

// bytePtr points at b's first byte, or is nil for an empty slice.
func bytePtr(b []byte) *C.char {
	if len(b) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(&b[0]))
}

func idPtr(ids []uint32) *C.uint32_t {
	if len(ids) == 0 {
		return nil
	}
	return (*C.uint32_t)(unsafe.Pointer(&ids[0]))
}

// Encode returns text's token ids, exactly Python tiktoken's (mc_encode).
func (c *Context) Encode(text string) ([]uint32, error) {
	b := []byte(text)
	ids := make([]uint32, len(b)) // never more ids than bytes
	var n C.size_t
	err := c.use(func(p *C.mc_context) error {
		return call("mc_encode", func() C.mc_status {
			return C.mc_encode(p, bytePtr(b), C.size_t(len(b)), idPtr(ids), C.size_t(len(ids)), &n)
		})
	})
	if err != nil {
		return nil, err
	}
	return ids[:n], nil
}

// Decode returns the exact bytes of ids, which need not be UTF-8 (mc_decode).
func (c *Context) Decode(ids []uint32) ([]byte, error) {
	return c.bytes("mc_decode", func(p *C.mc_context, buf *C.char, capacity C.size_t, n *C.size_t) C.mc_status {
		return C.mc_decode(p, idPtr(ids), C.size_t(len(ids)), buf, capacity, n)
	})
}

// DecodeToken returns the exact bytes of one token id (mc_decode_token).
func (c *Context) DecodeToken(id uint32) ([]byte, error) {
	return c.bytes("mc_decode_token", func(p *C.mc_context, buf *C.char, capacity C.size_t, n *C.size_t) C.mc_status {
		return C.mc_decode_token(p, C.uint32_t(id), buf, capacity, n)
	})
}

// bytes runs a size-probe call twice: once for the length, once into a buffer of that size.
func (c *Context) bytes(op string, f func(*C.mc_context, *C.char, C.size_t, *C.size_t) C.mc_status) ([]byte, error) {
	var out []byte
	err := c.use(func(p *C.mc_context) error {
		var n C.size_t
		if err := call(op, func() C.mc_status { return f(p, nil, 0, &n) }); err != nil {
			return err
		}
		out = make([]byte, int(n))
		return call(op, func() C.mc_status { return f(p, bytePtr(out), n, &n) })
	})
	return out, err
}

// EncodeTokenStr returns the one id text encodes to; other texts fail with ErrToken
// (mc_encode_token_str).
func (c *Context) EncodeTokenStr(text string) (uint32, error) {
	b := []byte(text)
	var id C.uint32_t
	err := c.use(func(p *C.mc_context) error {
		return call("mc_encode_token_str", func() C.mc_status {
			return C.mc_encode_token_str(p, bytePtr(b), C.size_t(len(b)), &id)
		})
	})
	return uint32(id), err
}

// EncodeBatch encodes many texts on all cores; each result equals Encode of that text
// (mc_encode_batch).
func (c *Context) EncodeBatch(texts []string) ([][]uint32, error) {
	if len(texts) == 0 {
		return [][]uint32{}, nil
	}
	// C reads texts through an array of pointers: both live in C memory.
	total := 0
	for _, t := range texts {
		total += len(t)
	}
	cBuf := C.malloc(C.size_t(total + 1))
	defer C.free(cBuf)
	buf := unsafe.Slice((*byte)(cBuf), total+1)
	cPtrs := C.malloc(C.size_t(len(texts)) * C.size_t(unsafe.Sizeof((*C.char)(nil))))
	defer C.free(cPtrs)
	ptrs := unsafe.Slice((**C.char)(cPtrs), len(texts))
	lens := make([]C.size_t, len(texts))
	at := 0
	for i, t := range texts {
		copy(buf[at:], t)
		ptrs[i] = (*C.char)(unsafe.Pointer(&buf[at]))
		lens[i] = C.size_t(len(t))
		at += len(t)
	}
	ids := make([]uint32, total+1)
	offsets := make([]C.size_t, len(texts)+1)
	var n C.size_t
	err := c.use(func(p *C.mc_context) error {
		return call("mc_encode_batch", func() C.mc_status {
			return C.mc_encode_batch(p, &ptrs[0], &lens[0], C.size_t(len(texts)), idPtr(ids), C.size_t(len(ids)), &offsets[0], C.size_t(len(offsets)), &n)
		})
	})
	if err != nil {
		return nil, err
	}
	out := make([][]uint32, len(texts))
	for i := range texts {
		out[i] = ids[offsets[i]:offsets[i+1]:offsets[i+1]]
	}
	return out, nil
}

// ModelOptions configure the context's model (the zero value: float32, not simplified, a
// bfloat16 model with its reordered copy of the weight matrices on the CPU).
type ModelOptions struct {
	Simplify bool
	DType    ModelDType
	// SkipReorder keeps no reordered copy (mc_model_options.skip_reorder).
	SkipReorder bool
}

// CreateModel creates the context's model with opts; the first creation wins and a later
// one with other options fails with ErrInvalidArgument (mc_create_model). Forward and Sample
// create a default model when none exists.
func (c *Context) CreateModel(opts ModelOptions) error {
	var o C.mc_model_options
	if err := call("mc_model_options_init", func() C.mc_status {
		return C.mc_model_options_init(&o, C.size_t(unsafe.Sizeof(o)))
	}); err != nil {
		return err
	}
	o.simplify = C.bool(opts.Simplify)
	o.dtype = C.mc_dtype(opts.DType)
	o.skip_reorder = C.bool(opts.SkipReorder)
	return c.use(func(p *C.mc_context) error {
		return call("mc_create_model", func() C.mc_status { return C.mc_create_model(p, &o) })
	})
}

// ActivationRequest names one activation to keep: a location and a layer (a layer index,
// LayerAll for every layer, or LayerNone for model-wide locations).
type ActivationRequest struct {
	Activation Activation
	Layer      int
}

// ForwardRequest is a batch of token ids, row-major [Batch, SeqLen]. The library checks
// len(Tokens) (and len(Pad) when given) against Batch*SeqLen: a mismatch is an error.
type ForwardRequest struct {
	Tokens      []uint32
	Batch       int
	SeqLen      int
	Pad         []bool // nil, or Batch*SeqLen flags, true at (right-)padding positions
	Activations []ActivationRequest
	Edits       []Edit       // applied where each activation is produced, in order
	Start       *Start       // nil: start from the token embeddings
	EndLayer    int          // 0: every layer; k: stop after layer k-1 (no logits)
	Logits      LogitsChoice // LogitsAll (default), LogitsLast or LogitsNone
	Backward    *Backward    // nil: no backward pass, nothing recorded for autograd
}

// cArray copies a Go slice into C memory (freed by the returned function).
func cArray[T any](s []T) (unsafe.Pointer, func()) {
	if len(s) == 0 {
		return nil, func() {}
	}
	var zero T
	p := C.malloc(C.size_t(len(s)) * C.size_t(unsafe.Sizeof(zero)))
	copy(unsafe.Slice((*T)(p), len(s)), s)
	return p, func() { C.free(p) }
}

// Forward runs a forward pass keeping the logits and the requested activations, and with
// r.Backward the objective and its gradients (mc_forward).
func (c *Context) Forward(r ForwardRequest) (*ForwardOutput, error) {
	acts := make([]C.mc_activation, len(r.Activations))
	layers := make([]C.int32_t, len(r.Activations))
	for i, a := range r.Activations {
		acts[i] = C.mc_activation(a.Activation)
		layers[i] = C.int32_t(a.Layer)
	}
	pad := make([]C.bool, len(r.Pad))
	for i, b := range r.Pad {
		pad[i] = C.bool(b)
	}
	// The request struct points at these arrays, so they live in C memory (cgo forbids Go
	// memory holding Go pointers from being passed to C).
	tokens, freeTokens := cArray(r.Tokens)
	defer freeTokens()
	cActs, freeActs := cArray(acts)
	defer freeActs()
	cLayers, freeLayers := cArray(layers)
	defer freeLayers()
	cPad, freePad := cArray(pad)
	defer freePad()
	var req C.mc_forward_request
	if err := call("mc_forward_request_init", func() C.mc_status {
		return C.mc_forward_request_init(&req, C.size_t(unsafe.Sizeof(req)))
	}); err != nil {
		return nil, err
	}
	req.tokens = tokens
	req.n_tokens = C.size_t(len(r.Tokens))
	req.token_type = C.MC_TOKENS_UINT32
	req.batch = C.int64_t(r.Batch)
	req.seq_len = C.int64_t(r.SeqLen)
	req.pad = (*C.bool)(cPad)
	req.n_pad = C.size_t(len(pad))
	req.activations = (*C.mc_activation)(cActs)
	req.layers = (*C.int32_t)(cLayers)
	req.n_activations = C.size_t(len(acts))
	var arena cArena
	defer arena.free()
	if err := arena.experiment(&req, &r); err != nil {
		return nil, err
	}
	var o *ForwardOutput
	err := c.use(func(p *C.mc_context) error {
		var out *C.mc_forward_output
		if err := call("mc_forward", func() C.mc_status { return C.mc_forward(p, &req, &out) }); err != nil {
			return err
		}
		o = &ForwardOutput{ptr: out}
		runtime.SetFinalizer(o, (*ForwardOutput).Close)
		return nil
	})
	return o, err
}

// ForwardOutput holds the logits and activations of one forward pass. Safe for concurrent
// use; tensors taken from it stay valid after Close.
type ForwardOutput struct {
	mu  sync.RWMutex
	ptr *C.mc_forward_output
}

// Get returns one activation [batch, ...] (layer: its layer, or LayerNone for model-wide
// locations); ErrNotFound if it was not requested (mc_forward_output_get).
func (o *ForwardOutput) Get(act Activation, layer int) (*Tensor, error) {
	return o.take("mc_forward_output_get", func(m **C.DLManagedTensorVersioned) C.mc_status {
		return C.mc_forward_output_get(o.ptr, C.mc_activation(act), C.int32_t(layer), m)
	})
}

// take calls one of the output's tensor getters under the read lock.
func (o *ForwardOutput) take(name string, get func(**C.DLManagedTensorVersioned) C.mc_status) (*Tensor, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.ptr == nil {
		return nil, ErrClosed
	}
	var m *C.DLManagedTensorVersioned
	if err := call(name, func() C.mc_status { return get(&m) }); err != nil {
		return nil, err
	}
	return newTensor(m), nil
}

// Logits returns the logits [batch, seq_len, vocab_size].
func (o *ForwardOutput) Logits() (*Tensor, error) { return o.Get(ActLogits, LayerNone) }

// Close frees the output (mc_forward_output_free); closing twice is a no-op.
func (o *ForwardOutput) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ptr != nil {
		C.mc_forward_output_free(o.ptr)
		o.ptr = nil
		runtime.SetFinalizer(o, nil)
	}
	return nil
}

// SampleOptions control Sample; start from DefaultSampleOptions.
type SampleOptions struct {
	MaxNewTokens    uint32
	Temperature     float64 // 0: greedy
	TopP            float64 // 1: no nucleus sampling
	Seed            uint64
	StopAtEndOfText bool
	TopK            uint32 // 0: off; applied after the temperature, before top-p
}

// fill writes the options into the C struct (filled by mc_sample_options_init).
func (opts SampleOptions) fill(o *C.mc_sample_options) {
	o.max_new_tokens = C.uint32_t(opts.MaxNewTokens)
	o.temperature = C.double(opts.Temperature)
	o.top_p = C.double(opts.TopP)
	o.top_k = C.uint32_t(opts.TopK)
	o.seed = C.uint64_t(opts.Seed)
	o.stop_at_end_of_text = C.bool(opts.StopAtEndOfText)
}

// DefaultSampleOptions are the C library's defaults: greedy, 16 tokens, seed 0, stop at
// <|endoftext|>.
func DefaultSampleOptions() SampleOptions {
	d, err := sampleOptions()
	if err != nil {
		panic(err) // only a library that cannot fill its own struct gets here
	}
	return SampleOptions{
		MaxNewTokens:    uint32(d.max_new_tokens),
		Temperature:     float64(d.temperature),
		TopP:            float64(d.top_p),
		Seed:            uint64(d.seed),
		StopAtEndOfText: bool(d.stop_at_end_of_text),
	}
}

// sampleOptions is the C struct filled by mc_sample_options_init for this binding's size.
func sampleOptions() (C.mc_sample_options, error) {
	var o C.mc_sample_options
	err := call("mc_sample_options_init", func() C.mc_status {
		return C.mc_sample_options_init(&o, C.size_t(unsafe.Sizeof(o)))
	})
	return o, err
}

// Sample continues prompt with up to opts.MaxNewTokens new ids (mc_sample).
func (c *Context) Sample(prompt []uint32, opts SampleOptions) ([]uint32, error) {
	o, err := sampleOptions()
	if err != nil {
		return nil, err
	}
	opts.fill(&o)
	out := make([]uint32, opts.MaxNewTokens)
	var n C.size_t
	err = c.use(func(p *C.mc_context) error {
		return call("mc_sample", func() C.mc_status {
			return C.mc_sample(p, idPtr(prompt), C.size_t(len(prompt)), &o, idPtr(out), C.size_t(len(out)), &n)
		})
	})
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}
