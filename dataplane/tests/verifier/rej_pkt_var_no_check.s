; a bounded variable offset without its own check
; expect: reject "invalid access to packet"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 1
if r4 > r3 goto drop
r5 = *(u8 *)(r2 + 0)
r2 += r5
r0 = *(u8 *)(r2 + 0)
exit
drop:
r0 = 1
exit
