package modelcontext

import (
	"sync/atomic"
	"unsafe"
)

// LiveTensors is the number of tensors whose DLPack deleter has not run yet.
func LiveTensors() int64 { return atomic.LoadInt64(&liveTensors) }

// FreeDetached calls the deleter of a tensor given away by Detach, as C code would.
func FreeDetached(p unsafe.Pointer) { deleteManaged(p) }
