#!/bin/sh
cat /etc/motd /cache-state /installed-deps.txt /setup-output.txt /srv/assets/bundle.txt /srv/lib/VERSION
ls -ln /srv/app/deps.txt | awk '{print "deps.txt owner " $3 ":" $4}'
stat -c 'deps.txt names %U:%G' /srv/app/deps.txt
ls /var/cache/pkg | wc -l | awk '{print "mounted files in the image: " $1}'
