; a masked index into an array value
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
; maps: array 4 64 1
*(u32 *)(r10 - 4) = 0
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
if r0 == 0 goto out
r6 = *(u32 *)(r0 + 0)
r6 &= 15
r6 <<= 2
r0 += r6
r1 = *(u32 *)(r0 + 0)
out:
r0 = 2
exit
