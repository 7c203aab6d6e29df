; an unbounded scalar added to a packet pointer
; expect: reject "unbounded offset"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 8
if r4 > r3 goto drop
r5 = *(u64 *)(r2 + 0)
r2 += r5
r0 = 2
exit
drop:
r0 = 1
exit
