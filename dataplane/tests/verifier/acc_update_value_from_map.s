; a map value used as the value argument of an update
; expect: accept
; maps: hash 4 8 16, array 4 8 1
*(u32 *)(r10 - 4) = 0
r2 = r10
r2 += -4
r1 = map[1] ll
call 1
if r0 == 0 goto out
r3 = r0
r1 = map[0] ll
r2 = r10
r2 += -4
r4 = 0
call 2
out:
r0 = 2
exit
