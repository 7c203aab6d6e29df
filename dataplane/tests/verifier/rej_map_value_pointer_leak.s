; a stack pointer stored into a map value
; expect: reject "leaks addr into map value"
; maps: hash 4 8 16
*(u32 *)(r10 - 4) = 1
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
if r0 == 0 goto out
*(u64 *)(r0 + 0) = r10
out:
r0 = 2
exit
