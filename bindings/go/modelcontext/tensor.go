package modelcontext

/*
#include <model_context.h>

// cgo cannot call a C function pointer: this calls the tensor's own deleter.
static void mc_go_tensor_delete(DLManagedTensorVersioned *t) {
  if (t != NULL && t->deleter != NULL) t->deleter(t);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// DeviceType is a DLPack device type.
type DeviceType int32

// The device types this library hands out.
const (
	CPU   DeviceType = C.kDLCPU
	CUDA  DeviceType = C.kDLCUDA
	Metal DeviceType = C.kDLMetal // Apple MPS
)

// Device is where a tensor's memory lives.
type Device struct {
	Type DeviceType
	ID   int
}

func (d Device) String() string {
	switch d.Type {
	case CPU:
		return "cpu"
	case CUDA:
		return fmt.Sprintf("cuda:%d", d.ID)
	case Metal:
		return "mps"
	}
	return fmt.Sprintf("device(%d):%d", d.Type, d.ID)
}

// DType is a DLPack data type.
type DType struct {
	Code  uint8
	Bits  uint8
	Lanes uint16
}

// The data types of weights and activations (and of the views that read them).
var (
	Float32  = DType{C.kDLFloat, 32, 1}
	Float16  = DType{C.kDLFloat, 16, 1}
	BFloat16 = DType{C.kDLBfloat, 16, 1}
	Float64  = DType{C.kDLFloat, 64, 1}
	Int64    = DType{C.kDLInt, 64, 1}
	Int32    = DType{C.kDLInt, 32, 1}
	Uint8    = DType{C.kDLUInt, 8, 1}
	Bool     = DType{C.kDLBool, 8, 1}
)

func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Float16:
		return "float16"
	case BFloat16:
		return "bfloat16"
	case Float64:
		return "float64"
	case Int64:
		return "int64"
	case Int32:
		return "int32"
	case Uint8:
		return "uint8"
	case Bool:
		return "bool"
	}
	return fmt.Sprintf("dtype(code=%d,bits=%d,lanes=%d)", d.Code, d.Bits, d.Lanes)
}

// liveTensors counts tensors whose deleter has not run yet (read by the tests).
var liveTensors int64

// Tensor is a DLPack tensor handed out by the library. Its metadata is copied into Go; its
// data stays where the library put it (a private mapping of the checkpoint, or libtorch
// storage) and is freed by Close or, failing that, by the finalizer: the DLPack deleter runs
// exactly once either way. Go code reads the data inside With (zero-copy, for the callback's
// duration: Close and the finalizer wait for it) or through Copy (Go memory), so no slice can
// outlive the memory it points into.
type Tensor struct {
	m        *C.DLManagedTensorVersioned
	data     unsafe.Pointer
	shape    []int64
	strides  []int64
	dtype    DType
	device   Device
	readOnly bool
	// mu is held for reading by each With callback and for writing by Close and Detach.
	mu     sync.RWMutex
	closed bool
}

func newTensor(m *C.DLManagedTensorVersioned) *Tensor {
	dl := &m.dl_tensor
	n := int(dl.ndim)
	t := &Tensor{
		m:        m,
		data:     unsafe.Add(dl.data, uintptr(dl.byte_offset)),
		shape:    make([]int64, n),
		strides:  make([]int64, n),
		dtype:    DType{uint8(dl.dtype.code), uint8(dl.dtype.bits), uint16(dl.dtype.lanes)},
		device:   Device{DeviceType(dl.device.device_type), int(dl.device.device_id)},
		readOnly: m.flags&C.DLPACK_FLAG_BITMASK_READ_ONLY != 0,
	}
	if n > 0 {
		copy(t.shape, unsafe.Slice((*int64)(unsafe.Pointer(dl.shape)), n))
		copy(t.strides, unsafe.Slice((*int64)(unsafe.Pointer(dl.strides)), n))
	}
	atomic.AddInt64(&liveTensors, 1)
	runtime.SetFinalizer(t, (*Tensor).Close)
	return t
}

// Close runs the tensor's DLPack deleter, after any With callback in flight returns. Closing
// again (or after Detach) is a no-op returning nil. Do not call it from inside a With
// callback on the same tensor (it would wait for itself).
func (t *Tensor) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		runtime.SetFinalizer(t, nil)
		deleteManaged(unsafe.Pointer(t.m))
		atomic.AddInt64(&liveTensors, -1)
	}
	return nil
}

// deleteManaged calls the deleter of a DLManagedTensorVersioned.
func deleteManaged(p unsafe.Pointer) {
	C.mc_go_tensor_delete((*C.DLManagedTensorVersioned)(p))
}

// Detach hands the DLPack tensor (a DLManagedTensorVersioned *) to other C code, which
// becomes responsible for calling its deleter; the Tensor is closed from Go's side.
func (t *Tensor) Detach() (unsafe.Pointer, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrFreed
	}
	t.closed = true
	runtime.SetFinalizer(t, nil)
	atomic.AddInt64(&liveTensors, -1)
	return unsafe.Pointer(t.m), nil
}

// ErrFreed is returned when a tensor is read after Close or Detach.
var ErrFreed = errors.New("modelcontext: tensor already closed")

// Shape is the tensor's shape (a copy).
func (t *Tensor) Shape() []int64 { return append([]int64(nil), t.shape...) }

// Strides are the tensor's strides in elements (a copy); weights may be strided views.
func (t *Tensor) Strides() []int64 { return append([]int64(nil), t.strides...) }

// DType is the element type.
func (t *Tensor) DType() DType { return t.dtype }

// Device is where the data lives; views need the CPU.
func (t *Tensor) Device() Device { return t.device }

// ReadOnly reports DLPack's read-only flag: the tensor aliases the checkpoint's private
// (copy-on-write) mapping. Writing anyway changes only this process's pages, never the file.
func (t *Tensor) ReadOnly() bool { return t.readOnly }

// NumElements is the product of the shape.
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, s := range t.shape {
		n *= s
	}
	return n
}

// Contiguous reports whether the strides are row-major without gaps.
func (t *Tensor) Contiguous() bool {
	want := int64(1)
	for i := len(t.shape) - 1; i >= 0; i-- {
		if t.shape[i] != 1 && t.strides[i] != want {
			return false
		}
		want *= t.shape[i]
	}
	return true
}

// Offset is the position in a view of the element at index (one entry per dimension),
// following the strides. It panics on a wrong number of indices or one out of range.
func (t *Tensor) Offset(index ...int64) int64 {
	if len(index) != len(t.shape) {
		panic(fmt.Sprintf("modelcontext: %d indices for a %d-dimensional tensor", len(index), len(t.shape)))
	}
	off := int64(0)
	for i, x := range index {
		if x < 0 || x >= t.shape[i] {
			panic(fmt.Sprintf("modelcontext: index %d out of range [0, %d) in dimension %d", x, t.shape[i], i))
		}
		off += x * t.strides[i]
	}
	return off
}

// span is the number of elements between the first and one past the last element.
func (t *Tensor) span() (int, error) {
	n := int64(1)
	for i, s := range t.shape {
		if s == 0 {
			return 0, nil
		}
		if t.strides[i] < 0 {
			return 0, fmt.Errorf("modelcontext: negative stride %d", t.strides[i])
		}
		n += (s - 1) * t.strides[i]
	}
	return int(n), nil
}

// Element is a Go type a view can have; it must match the tensor's DType (uint16 reads
// float16 and bfloat16 as raw bits).
type Element interface {
	float32 | float64 | int64 | int32 | uint8 | uint16 | bool
}

func dtypeMatches[T Element](d DType) bool {
	var zero T
	switch any(zero).(type) {
	case float32:
		return d == Float32
	case float64:
		return d == Float64
	case int64:
		return d == Int64
	case int32:
		return d == Int32
	case uint8:
		return d == Uint8
	case uint16:
		return d == Float16 || d == BFloat16
	case bool:
		return d == Bool
	}
	return false
}

// With calls f with the tensor's memory as a []T, without copying: element index i (one
// entry per dimension) is at view[t.Offset(i...)], and the view covers every element the
// strides reach. The view is valid only until f returns (Close and the finalizer wait for f);
// writes to a read-only tensor stay private to this process. f's error is returned.
// Inside f, do not Close the tensor nor start another With on it: a Close waiting on another
// goroutine blocks new callbacks, so a nested With would wait for itself.
func With[T Element](t *Tensor, f func(view []T) error) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	defer runtime.KeepAlive(t)
	if t.closed {
		return ErrFreed
	}
	if t.device.Type != CPU {
		return fmt.Errorf("modelcontext: tensor on %s: only host memory can be read from Go", t.device)
	}
	if !dtypeMatches[T](t.dtype) {
		var zero T
		return fmt.Errorf("modelcontext: a %T view of a %s tensor", zero, t.dtype)
	}
	n, err := t.span()
	if err != nil {
		return err
	}
	if n == 0 {
		return f([]T{})
	}
	return f(unsafe.Slice((*T)(t.data), n))
}

// Copy returns the tensor's elements in Go memory, laid out as With's view (index with
// Offset); it stays valid after Close.
func Copy[T Element](t *Tensor) ([]T, error) {
	var out []T
	err := With(t, func(view []T) error {
		out = append(make([]T, 0, len(view)), view...)
		return nil
	})
	return out, err
}

// Float32s is Copy[float32].
func (t *Tensor) Float32s() ([]float32, error) { return Copy[float32](t) }
