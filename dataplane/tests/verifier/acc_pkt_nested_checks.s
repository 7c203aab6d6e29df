; two checks, the second wider: both ranges hold where they should
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r4 > r3 goto drop
r0 = *(u16 *)(r2 + 12)
if r0 != 8 goto pass
r4 = r2
r4 += 34
if r4 > r3 goto drop
r0 = *(u8 *)(r2 + 23)
if r0 == 6 goto drop
pass:
r0 = 2
exit
drop:
r0 = 1
exit
