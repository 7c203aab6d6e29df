; atomics on packet memory
; expect: reject "atomic operation on packet"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 8
if r4 > r3 goto drop
r5 = 1
lock *(u64 *)(r2 + 0) += r5
drop:
r0 = 1
exit
