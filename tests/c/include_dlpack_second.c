/* The header compiles before the official DLPack header (which then must add nothing). */
#include "model_context.h"
#include <dlpack/dlpack.h>
#include <stddef.h>
_Static_assert(offsetof(DLManagedTensorVersioned, dl_tensor) == 32, "versioned layout");
_Static_assert(offsetof(DLTensor, byte_offset) == 40, "DLTensor layout");
int main(void) { return MC_OK; }
