; a load past the end of an 8-byte value
; expect: reject "outside the 8-byte value"
; maps: hash 4 8 16
*(u32 *)(r10 - 4) = 1
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
if r0 == 0 goto out
r0 = *(u32 *)(r0 + 6)
exit
out:
r0 = 2
exit
