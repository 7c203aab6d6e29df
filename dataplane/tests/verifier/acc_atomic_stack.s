; atomics on initialised stack
; expect: accept
*(u64 *)(r10 - 8) = 1
r1 = 2
lock *(u64 *)(r10 - 8) += r1
r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
*(u32 *)(r10 - 12) = 0
w2 = 3
w2 = xchg32_32(r10 - 12, w2)
r0 = 1
r3 = 4
r0 = cmpxchg_64(r10 - 8, r0, r3)
r0 = 2
exit
