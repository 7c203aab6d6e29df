; the value read on the edge where it is null
; expect: reject "invalid mem access 'scalar'"
; maps: hash 4 8 16
*(u32 *)(r10 - 4) = 1
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
if r0 != 0 goto out
r0 = *(u64 *)(r0 + 0)
exit
out:
r0 = 2
exit
