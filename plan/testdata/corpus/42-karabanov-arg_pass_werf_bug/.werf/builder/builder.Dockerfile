FROM alpine

WORKDIR /build

COPY . .
