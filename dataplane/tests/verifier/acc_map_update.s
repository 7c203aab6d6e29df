; update with key and value on the stack
; expect: accept
; maps: hash 4 8 1024
*(u32 *)(r10 - 4) = 7
*(u64 *)(r10 - 16) = 1
r1 = map[0] ll
r2 = r10
r2 += -4
r3 = r10
r3 += -16
r4 = 0
call 2
r0 = 2
exit
