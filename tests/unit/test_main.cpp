#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/support/empty_run_guard.h"
