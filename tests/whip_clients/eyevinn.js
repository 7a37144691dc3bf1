// The bundle's entry: @eyevinn/whip-web-client as the global EyevinnWhip.
export { WHIPClient } from "@eyevinn/whip-web-client";
