"""LoRaWAN FUOTA: LoRa Alliance TS003/TS004/TS005/TS006 codecs, keys, regions and airtime,
and the sans-IO FUOTA session state machine."""
