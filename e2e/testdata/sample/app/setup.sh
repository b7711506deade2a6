#!/bin/sh
echo "setup ran with $(cat /installed-deps.txt)"
