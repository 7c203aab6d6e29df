; a loop bounded by an unchecked 64-bit packet value
; expect: reject "too complex"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
; max_insns: 100000
r4 = r2
r4 += 8
if r4 > r3 goto out
r5 = *(u64 *)(r2 + 0)
r1 = 0
loop:
r1 += 1
if r1 < r5 goto loop
out:
r0 = 2
exit
