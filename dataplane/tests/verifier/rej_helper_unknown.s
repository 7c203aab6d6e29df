; a helper id sluice does not have
; expect: reject "unknown helper id 999"
call 999
r0 = 2
exit
