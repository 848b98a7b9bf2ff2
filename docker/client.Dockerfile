# An agency: one static binary. Config and its agency file arrive as read-only volumes.
FROM scratch
COPY client /client
WORKDIR /
ENTRYPOINT ["/client"]
