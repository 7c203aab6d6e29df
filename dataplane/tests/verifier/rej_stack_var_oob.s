; a variable stack offset that can leave the frame
; expect: reject "outside the 512-byte frame"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 1
if r4 > r3 goto drop
r5 = *(u8 *)(r2 + 0)
r6 = r10
r6 += -8
r6 += r5
*(u8 *)(r6 + 0) = 1
drop:
r0 = 1
exit
