; a masked index that can pass the end of the value
; expect: reject "outside the 16-byte value"
; maps: array 4 16 1
*(u32 *)(r10 - 4) = 0
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
if r0 == 0 goto out
r6 = *(u32 *)(r0 + 0)
r6 &= 15
r0 += r6
r1 = *(u32 *)(r0 + 0)
out:
r0 = 2
exit
