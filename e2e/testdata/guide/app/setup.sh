#!/bin/sh
echo "setup ran"
