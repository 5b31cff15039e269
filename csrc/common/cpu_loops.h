// What every family's CPU loops share, copied into each instruction set's namespace by isa_copies.h
// (no include guard, no includes: the family's _ops.cpp includes ATen before isa_copies.h).

// Elements per parallel task: below this, threads cost more than they save.
constexpr int64_t kGrainElements = 16384;

inline int64_t grain_rows(int64_t row_elements) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row_elements));
}
