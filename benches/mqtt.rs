//! MQTT broker benchmark: Mosquitto vs rumqttd vs the front (being written).
fn main() {}
