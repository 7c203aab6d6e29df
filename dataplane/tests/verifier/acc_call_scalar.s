; a bpf-to-bpf call with scalar arguments
; expect: accept
r1 = 20
r2 = 22
call add
exit
add:
r0 = r1
r0 += r2
exit
