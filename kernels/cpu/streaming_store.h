// Stores past the caches (x86's non-temporal stores), for a memory-bound pass writing a cold
// buffer. An ordinary store to a line that is not in cache first reads the line from memory (a
// read for ownership): in a training step every activation buffer is cold when its layer writes
// it (all of them stay alive for the backward pass), so such a pass moves its output's bytes
// twice. A streaming store writes whole lines without reading them; the output's reader then finds
// it in memory rather than in cache.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace psgd::cpu {

// Whether this build has streaming stores (x86 from SSE2): elsewhere stream_copy is a memcpy.
#if defined(__SSE2__)
inline constexpr bool kStreamingStores = true;
#else
inline constexpr bool kStreamingStores = false;
#endif

// Copies `bytes` from src to dst, the vectors of dst that lie whole on their alignment with
// streaming stores, the ends with ordinary ones. A caller computes its values into a small buffer
// in cache first, with the code of its ordinary path, so that streaming changes no bit. Streaming
// stores are weakly ordered: end the thread's streaming with stream_fence() before other threads
// read what it wrote.
inline void stream_copy(void* dst, const void* src, size_t bytes) {
#if !defined(__SSE2__)
  std::memcpy(dst, src, bytes);
#else
#if defined(__AVX512F__)
  using Vector = __m512i;
  const auto put = [](void* to, const void* from) {
    _mm512_stream_si512(static_cast<Vector*>(to), _mm512_loadu_si512(from));
  };
#elif defined(__AVX__)
  using Vector = __m256i;
  const auto put = [](void* to, const void* from) {
    _mm256_stream_si256(static_cast<Vector*>(to),
                        _mm256_loadu_si256(static_cast<const Vector*>(from)));
  };
#else
  using Vector = __m128i;
  const auto put = [](void* to, const void* from) {
    _mm_stream_si128(static_cast<Vector*>(to), _mm_loadu_si128(static_cast<const Vector*>(from)));
  };
#endif
  auto* to = static_cast<unsigned char*>(dst);
  const auto* from = static_cast<const unsigned char*>(src);
  const size_t misalignment = reinterpret_cast<uintptr_t>(to) % sizeof(Vector);
  const size_t head = misalignment == 0 ? 0 : std::min(bytes, sizeof(Vector) - misalignment);
  std::memcpy(to, from, head);
  size_t i = head;
  for (; i + sizeof(Vector) <= bytes; i += sizeof(Vector)) put(to + i, from + i);
  std::memcpy(to + i, from + i, bytes - i);
#endif
}

// Orders this thread's streaming stores before its later stores (an OpenMP barrier's), so that
// threads that synchronise with it afterwards see them.
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace psgd::cpu
