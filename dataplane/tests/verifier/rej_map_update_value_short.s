; the value argument covers 4 of 8 bytes
; expect: reject "is not initialised"
; maps: hash 4 8 16
*(u32 *)(r10 - 4) = 7
*(u32 *)(r10 - 12) = 1
r1 = map[0] ll
r2 = r10
r2 += -4
r3 = r10
r3 += -16
r4 = 0
call 2
r0 = 2
exit
