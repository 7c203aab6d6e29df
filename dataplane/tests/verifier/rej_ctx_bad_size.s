; a 16-bit load of an xdp_md field
; expect: reject "invalid ctx access"
r0 = *(u16 *)(r1 + 0)
exit
