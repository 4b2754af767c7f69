/* The C tests' one assertion: counts checks and failures, printing each failure with the
 * library's last error. Include once per test program, after model_context.h. */
#ifndef MC_TEST_CHECK_H
#define MC_TEST_CHECK_H
#include <stdio.h>

static int checks = 0, failed = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    checks++;                                                                  \
    if (!(cond)) {                                                             \
      failed++;                                                                \
      fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, \
              __LINE__, #cond, mc_last_error());                               \
    }                                                                          \
  } while (0)
#endif
