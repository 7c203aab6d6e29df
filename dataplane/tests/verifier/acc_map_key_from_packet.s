; the lookup key is read from the checked packet
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
; maps: hash 4 8 16
r4 = r2
r4 += 30
if r4 > r3 goto out
r2 += 26
r1 = map[0] ll
call 1
if r0 == 0 goto out
r0 = 1
exit
out:
r0 = 2
exit
