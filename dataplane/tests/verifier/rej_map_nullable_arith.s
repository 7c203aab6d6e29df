; arithmetic on an unchecked lookup result
; expect: reject "may be null"
; maps: hash 4 8 16
*(u32 *)(r10 - 4) = 1
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
r0 += 4
r0 = 2
exit
