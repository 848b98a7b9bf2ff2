# The central server: one static binary, nothing else. Config and bets arrive as volumes.
FROM scratch
COPY server /server
WORKDIR /
EXPOSE 12345
ENTRYPOINT ["/server"]
