; get_smp_processor_id
; expect: accept
call 8
r0 = 2
exit
