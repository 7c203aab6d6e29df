; a pointer stored into the packet
; expect: reject "leaks addr into packet"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 8
if r4 > r3 goto drop
*(u64 *)(r2 + 0) = r2
r0 = 2
exit
drop:
r0 = 1
exit
