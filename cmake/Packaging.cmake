# A Debian package of what `cmake --install` installs: `cpack` in a build
# directory writes piko-c_<version>_<arch>.deb (tests/package.sh installs it
# into a fresh Debian root and uses it there).
#
# The run-time dependencies come from dpkg-shlibdeps (dpkg-dev), which reads
# the binaries' NEEDED libraries. Two are loaded with dlopen() and so cannot
# be seen there: libwebsockets' libev event-loop plugin, which `piko server`
# runs on (core/runloop.c; without it the server falls back to poll() with a
# warning); libev itself is linked, so dpkg-shlibdeps finds it.

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME piko-c)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "Piko in C maintainers <maintainers@piko-c.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "self-hosted tunnels to services behind NAT, compatible with Piko")
set(CPACK_PACKAGE_DESCRIPTION
    "Piko in C: piko server (the proxy, in a cluster of nodes), piko agent and piko forward (the \
two ends of a tunnel), piko-controller (the Kubernetes operator) and libpiko-client (the client \
as a C library: headers, shared and static library, pkg-config file), compatible with Piko's \
agents, SDK, flags and configuration.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libwebsockets-evlib-ev")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# Only the components a user needs; tests and benchmark tools are not
# installed.
set(CPACK_STRIP_FILES ON)
include(CPack)
