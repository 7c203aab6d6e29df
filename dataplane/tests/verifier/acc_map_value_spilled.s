; a checked map value spilled and filled
; expect: accept
; maps: hash 4 8 16
*(u32 *)(r10 - 4) = 1
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
if r0 == 0 goto out
*(u64 *)(r10 - 16) = r0
r1 = *(u64 *)(r10 - 16)
r0 = *(u64 *)(r1 + 0)
exit
out:
r0 = 2
exit
