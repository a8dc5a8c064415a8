// One family of error checks. Every failure throws psgd::Error whose message is one line:
// what went wrong, then the failed expression with its file and line. Checks stay on in
// release builds: shapes are validated once per call, never per element.
#pragma once

#include <new>
#include <sstream>
#include <stdexcept>
#include <string>

namespace psgd {

class Error : public std::runtime_error {
 public:
  // what() is the message and where the check failed; message() is for users' eyes.
  Error(const std::string& message, const std::string& where)
      : std::runtime_error(message + " [" + where + "]"), message_(message) {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

// The text to show a user for any exception: psgd's own without the source location.
inline std::string user_message(const std::exception& e) {
  if (const auto* own = dynamic_cast<const Error*>(&e)) return own->message();
  if (dynamic_cast<const std::bad_alloc*>(&e))
    return "out of host memory (a smaller batch, or fewer threads, may fit)";
  return e.what();
}

namespace detail {

template <class... Args>
[[noreturn]] void throw_error(const char* file, int line, const char* expr, const Args&... what) {
  std::ostringstream msg, where;
  (msg << ... << what);
  where << expr << " failed at " << file << ":" << line;
  throw Error(msg.str(), where.str());
}

// The function called in a library-call expression: "cudaMalloc(&p, n)" -> "cudaMalloc".
inline std::string call_name(const char* expr) {
  const std::string e(expr);
  return e.substr(0, e.find('('));
}

}  // namespace detail
}  // namespace psgd

// PSGD_CHECK(cond, part, part, ...): throws psgd::Error with the parts streamed together.
#define PSGD_CHECK(cond, ...)                                                    \
  do {                                                                           \
    if (!(cond)) [[unlikely]]                                                    \
      ::psgd::detail::throw_error(__FILE__, __LINE__, #cond, __VA_ARGS__);       \
  } while (0)

// PSGD_FAIL(part, ...): unconditional failure for unreachable states and bad input.
#define PSGD_FAIL(...) ::psgd::detail::throw_error(__FILE__, __LINE__, "PSGD_FAIL", __VA_ARGS__)
