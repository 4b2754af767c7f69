/* The header compiles after the official DLPack header (it must not redefine its types). */
#include <dlpack/dlpack.h>
#include "model_context.h"
int main(void) { return sizeof(DLManagedTensorVersioned) == 0 || kDLFloat8_e3m4 != 7; }
