; callx through a register with no known helper id
; expect: reject "callx through R6"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 1
if r4 > r3 goto out
r6 = *(u8 *)(r2 + 0)
callx r6
out:
r0 = 2
exit
