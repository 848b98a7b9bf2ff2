# A tiny netcat for validar-echo-server.sh, from Debian's busybox-static (no registry needed).
FROM scratch
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox"]
