; comparing two packet pointers is allowed
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 4
if r4 == r2 goto out
out:
r0 = 2
exit
