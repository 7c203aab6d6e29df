; a load past the end of xdp_md
; expect: reject "invalid ctx access"
r0 = *(u32 *)(r1 + 24)
exit
