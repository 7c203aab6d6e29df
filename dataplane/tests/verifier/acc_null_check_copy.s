; a copy of a lookup result is settled by the check on the original
; expect: accept
; maps: hash 4 8 16
*(u32 *)(r10 - 4) = 1
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
r6 = r0
if r0 == 0 goto out
r0 = *(u64 *)(r6 + 0)
exit
out:
r0 = 2
exit
