// Included by the suites' main(): a run whose test-case filter matches nothing fails instead of
// passing with nothing checked. ctest runs each case through such a filter, and a name ctest
// mangles (a ';' splits it in two) would otherwise never run while reported as passed.
#pragma once

#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>

namespace psgd::test {

struct EmptyRunGuard : doctest::IReporter {
  explicit EmptyRunGuard(const doctest::ContextOptions&) {}
  void test_run_end(const doctest::TestRunStats& stats) override {
    if (stats.numTestCasesPassingFilters > 0) return;
    std::fprintf(stderr, "no test case matches the filter (does its name hold a ';'?)\n");
    std::fflush(stderr);
    std::_Exit(1);
  }
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

REGISTER_LISTENER("empty_run_guard", 1, EmptyRunGuard);

}  // namespace psgd::test
