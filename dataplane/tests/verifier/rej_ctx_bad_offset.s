; a load inside an xdp_md field
; expect: reject "invalid ctx access"
r0 = *(u32 *)(r1 + 2)
exit
