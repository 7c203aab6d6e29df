; delete by a key on the stack
; expect: accept
; maps: lru_hash 8 8 64
*(u64 *)(r10 - 8) = 7
r1 = map[0] ll
r2 = r10
r2 += -8
call 3
r0 = 2
exit
