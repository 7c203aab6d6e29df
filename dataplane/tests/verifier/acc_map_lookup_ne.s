; lookup checked with != 0, value updated in place
; expect: accept
; maps: array 4 16 4
*(u32 *)(r10 - 4) = 0
r2 = r10
r2 += -4
r1 = map[0] ll
call 1
if r0 != 0 goto hit
r0 = 2
exit
hit:
r1 = *(u64 *)(r0 + 8)
r1 += 1
*(u64 *)(r0 + 8) = r1
r0 = 2
exit
