; a packet load with no check against data_end
; expect: reject "invalid access to packet, off=0 size=1"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r0 = *(u8 *)(r2 + 0)
exit
