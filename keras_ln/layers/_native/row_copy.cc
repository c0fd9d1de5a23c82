// The scikit-learn estimators' training rows, copied into the buffer that
// becomes their tensor, with each row's 64-bit multilinear hash computed in
// the same pass (keras_ln/sklearn/_training.py, `training_rows`).
//
// A plain C function, called through ctypes on NumPy's buffers: a TensorFlow
// op would first need the rows as a tensor, which is the copy this replaces.
// The hash is `_training._hash_words`' exactly: the row's bytes as 32-bit
// words w_j, and sum_j w_j * K_j modulo 2^64 with the caller's odd keys K_j.
// Integer arithmetic modulo 2^64 is exact in any order, so the hashes are
// the same bits as NumPy's on every CPU, vectorized or not, in any number of
// threads. The rows are split into contiguous blocks, one per thread.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// Below this many bytes in all, one thread: starting another costs more.
constexpr int64_t kThreadedMinBytes = 1 << 22;

void CopyAndHash(const unsigned char* src, unsigned char* dst, int64_t begin,
                 int64_t end, int64_t row_bytes, const uint64_t* keys,
                 uint64_t* hashes) {
  const int64_t words = row_bytes / 4;
  for (int64_t i = begin; i < end; ++i) {
    unsigned char* row = dst + i * row_bytes;
    std::memcpy(row, src + i * row_bytes, row_bytes);
    if (hashes == nullptr) continue;
    uint64_t h = 0;
    for (int64_t j = 0; j < words; ++j) {
      uint32_t w;
      std::memcpy(&w, row + 4 * j, 4);  // little-endian, as NumPy's view
      h += static_cast<uint64_t>(w) * keys[j];
    }
    hashes[i] = h;
  }
}

}  // namespace

// Copies `rows` rows of `row_bytes` bytes (a multiple of 4) from `src` to
// `dst` and, where `hashes` is not null, writes each row's hash with the
// `row_bytes / 4` keys `keys`. Up to `max_threads` threads.
extern "C" __attribute__((visibility("default"))) void keras_ln_copy_rows(
    const void* src, void* dst, int64_t rows, int64_t row_bytes,
    const uint64_t* keys, uint64_t* hashes, int max_threads) {
  const auto* in = static_cast<const unsigned char*>(src);
  auto* out = static_cast<unsigned char*>(dst);
  int threads = 1;
  if (rows * row_bytes >= kThreadedMinBytes && max_threads > 1) {
    threads = static_cast<int>(std::min<int64_t>(max_threads, rows));
  }
  if (threads == 1) {
    CopyAndHash(in, out, 0, rows, row_bytes, keys, hashes);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t block = (rows + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const int64_t begin = t * block;
    const int64_t end = std::min(rows, begin + block);
    if (begin >= end) break;
    pool.emplace_back(CopyAndHash, in, out, begin, end, row_bytes, keys, hashes);
  }
  CopyAndHash(in, out, 0, std::min(rows, block), row_bytes, keys, hashes);
  for (auto& thread : pool) thread.join();
}
