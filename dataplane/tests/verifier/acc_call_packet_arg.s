; a packet pointer passed to a callee that checks and reads it
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r1 = r2
r2 = r3
call parse
exit
parse:
r3 = r1
r3 += 2
if r3 > r2 goto short
r0 = *(u16 *)(r1 + 0)
exit
short:
r0 = 1
exit
