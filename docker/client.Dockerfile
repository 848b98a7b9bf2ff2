# An agency: one static binary plus Debian's static busybox (`docker exec client1 sh`).
# Its config and the .data folder arrive as read-only mounts.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin CLI_CONFIG=/config/client.yaml
COPY client /client
WORKDIR /
ENTRYPOINT ["/client"]
