package modelcontext

/*
#include <stdlib.h>
#include <model_context.h>
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// EditOp is what an Edit does to the selected elements (docs/experiments.md).
type EditOp int32

// The edit operations, with the C library's values.
const (
	EditSet     EditOp = C.MC_EDIT_SET     // set to Value (zero-ablation with 0)
	EditScale   EditOp = C.MC_EDIT_SCALE   // multiply by Value
	EditAdd     EditOp = C.MC_EDIT_ADD     // add Operand (steering)
	EditReplace EditOp = C.MC_EDIT_REPLACE // replace with Operand (patching)
)

// LogitsChoice says which positions of a forward pass get logits.
type LogitsChoice int32

// The logits choices, with the C library's values.
const (
	LogitsAll  LogitsChoice = C.MC_LOGITS_ALL  // every position (the zero value)
	LogitsLast LogitsChoice = C.MC_LOGITS_LAST // each row's last non-padding position
	LogitsNone LogitsChoice = C.MC_LOGITS_NONE // none: no unembedding
)

// Operand is float32 data in row-major order with its shape; the library copies it during
// the call (for EditAdd and EditReplace it broadcasts to the selection's shape).
type Operand struct {
	Data  []float32
	Shape []int64
}

// Edit changes one activation where it is produced, so everything downstream sees the
// edited value. Selection has one entry per leading axis of [batch, ...]: nil is the whole
// axis, otherwise the indices; axes past it are whole.
type Edit struct {
	Location  Activation
	Layer     int // LayerNone for model-wide locations
	Op        EditOp
	Value     float64  // EditSet's constant, EditScale's factor
	Operand   *Operand // EditAdd and EditReplace
	Selection [][]int64
}

// ObjectiveKind says what a backward pass differentiates (docs/experiments.md).
type ObjectiveKind int32

// The objective kinds, with the C library's values.
const (
	ObjectiveLogit     ObjectiveKind = C.MC_OBJECTIVE_LOGIT      // logit of Tokens[row]
	ObjectiveLogitDiff ObjectiveKind = C.MC_OBJECTIVE_LOGIT_DIFF // Tokens[row] minus OtherTokens[row]
	ObjectiveLogProb   ObjectiveKind = C.MC_OBJECTIVE_LOG_PROB   // mean log-probability of Targets
	ObjectiveDirection ObjectiveKind = C.MC_OBJECTIVE_DIRECTION  // activation . Direction
)

// Objective is one scalar per row; the rows' sum is differentiated, so each row's gradients
// are its own. Per-row slices have Batch entries; a position of -1 (or nil Positions) is
// the row's last non-padding position. Targets (LogProb) is nil for the next tokens or
// Batch*SeqLen ids, -1 where a position has none.
type Objective struct {
	Kind        ObjectiveKind
	Tokens      []int64
	OtherTokens []int64
	Positions   []int64
	Targets     []int64
	Location    Activation // ObjectiveDirection: the activation and its layer
	Layer       int
	Direction   *Operand // broadcasts to [batch, ...the location's per-position shape]
}

// Backward asks a forward pass for the gradients of Objective at the locations in At
// (LayerAll: every layer run); read them with ForwardOutput.Grad and ForwardOutput.Objective.
type Backward struct {
	Objective Objective
	At        []ActivationRequest
}

// Start makes a forward pass begin at Layer's input from Resid [batch, seq_len, d_model]
// instead of the token embeddings (Tokens may then be nil).
type Start struct {
	Layer int
	Resid Operand
}

// cArena holds the C memory of one request, freed together after the call.
type cArena struct{ ptrs []unsafe.Pointer }

func (a *cArena) alloc(size uintptr) unsafe.Pointer {
	p := C.calloc(1, C.size_t(size))
	a.ptrs = append(a.ptrs, p)
	return p
}

func (a *cArena) free() {
	for _, p := range a.ptrs {
		C.free(p)
	}
}

// tensor is a borrowed float32 CPU DLPack tensor over a C copy of o.
func (a *cArena) tensor(o *Operand, what string) (*C.DLManagedTensorVersioned, error) {
	n := int64(1)
	for _, d := range o.Shape {
		n *= d
	}
	if len(o.Shape) == 0 || n != int64(len(o.Data)) {
		return nil, fmt.Errorf("%s: %d values for shape %v: %w", what, len(o.Data), o.Shape, ErrInvalidArgument)
	}
	data := a.alloc(uintptr(len(o.Data)) * 4)
	copy(unsafe.Slice((*float32)(data), len(o.Data)), o.Data)
	shape := a.alloc(uintptr(len(o.Shape)) * 8)
	copy(unsafe.Slice((*int64)(shape), len(o.Shape)), o.Shape)
	m := (*C.DLManagedTensorVersioned)(a.alloc(unsafe.Sizeof(C.DLManagedTensorVersioned{})))
	m.version.major = C.DLPACK_MAJOR_VERSION
	m.version.minor = C.DLPACK_MINOR_VERSION
	m.dl_tensor.data = data
	m.dl_tensor.device.device_type = C.kDLCPU
	m.dl_tensor.ndim = C.int32_t(len(o.Shape))
	m.dl_tensor.dtype.code = C.kDLFloat
	m.dl_tensor.dtype.bits = 32
	m.dl_tensor.dtype.lanes = 1
	m.dl_tensor.shape = (*C.int64_t)(shape)
	return m, nil
}

// edits writes the request's edits into C memory (counts from the Go slices).
func (a *cArena) edits(edits []Edit) (*C.mc_edit, error) {
	if len(edits) == 0 {
		return nil, nil
	}
	size := unsafe.Sizeof(C.mc_edit{})
	arr := unsafe.Slice((*C.mc_edit)(a.alloc(size*uintptr(len(edits)))), len(edits))
	for i, e := range edits {
		c := &arr[i]
		if err := call("mc_edit_init", func() C.mc_status { return C.mc_edit_init(c, C.size_t(size)) }); err != nil {
			return nil, err
		}
		c.location = C.mc_activation(e.Location)
		c.layer = C.int32_t(e.Layer)
		c.op = C.mc_edit_op(e.Op)
		c.value = C.double(e.Value)
		if e.Operand != nil {
			t, err := a.tensor(e.Operand, fmt.Sprintf("edit %d operand", i))
			if err != nil {
				return nil, err
			}
			c.operand = t
		}
		if len(e.Selection) > 0 {
			sel := unsafe.Slice((*C.mc_axis_selection)(a.alloc(unsafe.Sizeof(C.mc_axis_selection{})*uintptr(len(e.Selection)))), len(e.Selection))
			for axis, ix := range e.Selection {
				if ix == nil {
					continue // the whole axis: NULL with 0
				}
				p := a.alloc(uintptr(len(ix)+1) * 8)
				copy(unsafe.Slice((*int64)(p), len(ix)), ix)
				sel[axis].indices = (*C.int64_t)(p)
				sel[axis].n_indices = C.size_t(len(ix))
			}
			c.selection = &sel[0]
			c.n_selection = C.size_t(len(e.Selection))
		}
	}
	return &arr[0], nil
}

// experiment fills the request's edits, start, end and logits choice.
func (a *cArena) experiment(req *C.mc_forward_request, r *ForwardRequest) error {
	edits, err := a.edits(r.Edits)
	if err != nil {
		return err
	}
	req.edits = edits
	req.n_edits = C.size_t(len(r.Edits))
	if r.Start != nil {
		t, err := a.tensor(&r.Start.Resid, "start residual")
		if err != nil {
			return err
		}
		req.start_residual = t
		req.start_layer = C.int32_t(r.Start.Layer)
	}
	req.end_layer = C.int32_t(r.EndLayer)
	req.logits = C.mc_logits_choice(r.Logits)
	if r.Backward != nil {
		return a.backward(req, r.Backward)
	}
	return nil
}

// ids copies a slice of ids into C memory, returning the pointer and its length.
func (a *cArena) ids(v []int64) (*C.int64_t, C.size_t) {
	if len(v) == 0 {
		return nil, 0
	}
	p := a.alloc(uintptr(len(v)) * 8)
	copy(unsafe.Slice((*int64)(p), len(v)), v)
	return (*C.int64_t)(p), C.size_t(len(v))
}

// backward fills the request's objective and gradient locations.
func (a *cArena) backward(req *C.mc_forward_request, b *Backward) error {
	o := (*C.mc_objective)(a.alloc(unsafe.Sizeof(C.mc_objective{})))
	if err := call("mc_objective_init", func() C.mc_status {
		return C.mc_objective_init(o, C.size_t(unsafe.Sizeof(*o)))
	}); err != nil {
		return err
	}
	obj := &b.Objective
	o.kind = C.mc_objective_kind(obj.Kind)
	o.tokens, o.n_tokens = a.ids(obj.Tokens)
	o.other_tokens, o.n_other_tokens = a.ids(obj.OtherTokens)
	o.positions, o.n_positions = a.ids(obj.Positions)
	o.targets, o.n_targets = a.ids(obj.Targets)
	o.location = C.mc_activation(obj.Location)
	o.layer = C.int32_t(obj.Layer)
	if obj.Direction != nil {
		t, err := a.tensor(obj.Direction, "objective direction")
		if err != nil {
			return err
		}
		o.direction = t
	}
	req.objective = o
	if n := len(b.At); n > 0 {
		acts := unsafe.Slice((*C.mc_activation)(a.alloc(uintptr(n)*4)), n)
		layers := unsafe.Slice((*C.int32_t)(a.alloc(uintptr(n)*4)), n)
		for i, at := range b.At {
			acts[i], layers[i] = C.mc_activation(at.Activation), C.int32_t(at.Layer)
		}
		req.grad_activations, req.grad_layers, req.n_grads = &acts[0], &layers[0], C.size_t(n)
	}
	return nil
}

// Objective returns each row's objective value [batch] (float32) of a request with a
// Backward; ErrNotFound without one (mc_forward_output_objective).
func (o *ForwardOutput) Objective() (*Tensor, error) {
	return o.take("mc_forward_output_objective", func(m **C.DLManagedTensorVersioned) C.mc_status {
		return C.mc_forward_output_objective(o.ptr, m)
	})
}

// Grad returns the gradient of the rows' summed objective at one requested location and
// layer, with the activation's shape; zeros where the objective does not depend on it
// (mc_forward_output_grad).
func (o *ForwardOutput) Grad(act Activation, layer int) (*Tensor, error) {
	return o.take("mc_forward_output_grad", func(m **C.DLManagedTensorVersioned) C.mc_status {
		return C.mc_forward_output_grad(o.ptr, C.mc_activation(act), C.int32_t(layer), m)
	})
}
